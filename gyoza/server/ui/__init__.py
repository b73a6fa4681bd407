"""The dashboard's sign-in: signed session cookies, their CSRF tokens, and the secret that signs both."""
