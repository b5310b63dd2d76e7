"""What every component of the agent runs on, whatever it does: the slot timer, supervised threads and the systemd
watchdog, health counters and problems, durable file writes, logging, and the one MQTT client factory."""
