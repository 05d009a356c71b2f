"""Clients, campaigns, partners and links: the network's catalog."""
