-- Argo CD resource action "renew" for AccessTokens: asks for a new token now,
-- as `tokensmith token renew` does (the old one stays valid until it expires).
-- Install it in argocd-cm under resource.customizations.actions.tokensmith.dev_AccessToken
-- (see the README for the discovery part).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tokensmith.dev/renew"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
