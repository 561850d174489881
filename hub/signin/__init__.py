"""Sign-in: Google accounts through oauthenticator."""
