"""Crypto: SSH keys, the ssh-agent client, SSHSIG signatures and the trusted-key store."""
