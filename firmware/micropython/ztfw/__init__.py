"""ztfl firmware agent for ESP32 / ESP32-S3 (MicroPython)."""
