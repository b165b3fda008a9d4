"""UrbanCLIP network: pure PyTorch, knows nothing of files, CRSs or the CLI."""
