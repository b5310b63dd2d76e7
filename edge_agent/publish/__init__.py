"""What the agent publishes on MQTT: its own connection with a last will (mqtt.Publisher) and Home Assistant
discovery payloads (hass)."""
