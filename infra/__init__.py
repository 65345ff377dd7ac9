"""What runs somflow: the local services and their one supervisor (service.py)."""
