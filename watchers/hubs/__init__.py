"""Hub watcher: deep probes of each hub and NGINX failover from the active hub to a standby."""
