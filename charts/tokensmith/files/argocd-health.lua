-- Argo CD health check for tokensmith resources (AccessToken,
-- AppRegistration, TokenIssuer, ClusterTokenIssuer), keyed on Ready.
-- Install it in argocd-cm under resource.customizations.health.tokensmith.dev_<Kind>.
local hs = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      local generation = obj.metadata.generation
      if generation ~= nil and condition.observedGeneration ~= nil and condition.observedGeneration < generation then
        hs.status = "Progressing"
        hs.message = "The operator has not seen the latest spec yet"
      elseif condition.status == "True" then
        hs.status = "Healthy"
        hs.message = condition.message
      elseif condition.reason == "IssuerNotReady" then
        -- Retried on its own: an issuer applied in the same sync is on its way.
        hs.status = "Progressing"
        hs.message = condition.message
      elseif condition.reason == "Revoked" or condition.reason == "Expired" then
        -- Asked for (revoked: true, onExpiry: Delete): kept as a record.
        hs.status = "Suspended"
        hs.message = condition.message
      else
        hs.status = "Degraded"
        hs.message = condition.message
      end
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
