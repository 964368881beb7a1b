"""Speed and memory levers, each reporting whether it is active and why (``metrics.json`` ``levers``)."""
