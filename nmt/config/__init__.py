"""The commands' typed configs (composed from the settings each layer declares), the Hydra
callback that checks them before a job starts, and the resolvers configs/ uses."""
