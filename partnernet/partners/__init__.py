"""The partner side: sign-up, the partner portal at /partner/, applications and partner postbacks."""
