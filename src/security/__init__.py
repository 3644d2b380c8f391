"""Who is calling and what they may do: tokens, passwords, credentials, lockout, authentication,
permissions, rate limits and the encryption of data at rest."""
