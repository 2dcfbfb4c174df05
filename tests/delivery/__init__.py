"""Delivery tests: the Helm chart, the plain install, Dockerfiles, GitLab CI and scripts/deploy.sh."""
