"""The federation layer both roles speak: MQTT messages, topics, transport and file transfer."""
