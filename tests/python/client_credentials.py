"""Runs the OAuth 2.0 client_credentials grant with Authlib, as a machine
client would, and prints the token response as JSON.

usage: client_credentials.py TOKEN_URL CA_FILE CLIENT_ID CLIENT_SECRET AUTH_METHOD [SCOPE]
AUTH_METHOD: client_secret_basic or client_secret_post
"""
import json
import sys

from authlib.integrations.requests_client import OAuth2Session

token_url, ca_file, client_id, client_secret, method = sys.argv[1:6]
scope = sys.argv[6] if len(sys.argv) > 6 else None
session = OAuth2Session(
    client_id,
    client_secret,
    scope=scope,
    token_endpoint_auth_method=method,
)
# Per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
token = session.fetch_token(token_url, grant_type="client_credentials", verify=ca_file)
print(json.dumps(dict(token)))
