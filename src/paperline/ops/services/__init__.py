"""The services a workspace talks to as data: its local Prefect server, the deployments and work pools."""
