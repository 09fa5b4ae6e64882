"""modeldeploy: a Kubernetes operator for serving ML models."""
