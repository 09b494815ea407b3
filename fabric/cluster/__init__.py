"""The cluster beyond one machine: its CA, bootstrap tokens, and hosts that join over the network
(as Kubernetes' kubelet TLS bootstrap: a short-lived token buys a certificate, and the
certificate, renewed at 70-90% of its life, is the host's identity from then on)."""
