"""Verifies a JWT the way an independent verifier does: PyJWT's PyJWKClient
fetches the issuer's JWKS over HTTPS and picks the key by `kid`.

usage: verify_jwks.py JWKS_URL CA_FILE ISSUER TOKEN  -> prints the claims as JSON
"""
import json
import ssl
import sys

import jwt

jwks_url, ca_file, issuer, token = sys.argv[1:5]
context = ssl.create_default_context(cafile=ca_file)
client = jwt.PyJWKClient(jwks_url, ssl_context=context)
signing_key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(
    token,
    signing_key.key,
    algorithms=["ES256", "RS256", "EdDSA"],
    issuer=issuer,
    options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub", "jti"]},
)
print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
