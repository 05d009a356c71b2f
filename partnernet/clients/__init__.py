"""The client (advertiser) side: spend caps, the client pages, invoices."""
