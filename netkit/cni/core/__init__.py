"""The CNI contract, pure: requests, errors, results."""
