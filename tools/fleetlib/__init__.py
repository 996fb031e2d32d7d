"""Parts of tools/fleet: its destinations and its CPU sampling."""
