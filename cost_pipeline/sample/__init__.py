"""Sample data for a fictional ML organisation: CUR 2.0 billing, Prometheus extracts, ground truth."""
