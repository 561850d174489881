"""Sign-in: Google accounts through oauthenticator (google), or each person's own local
password through nativeauthenticator (local)."""
