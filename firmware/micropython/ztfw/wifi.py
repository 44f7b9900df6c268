"""Station-mode Wi-Fi on the board; a no-op where the port has no `network` module
(the unix port, where the host's network is used)."""
import time


class WifiError(OSError):
    pass


def connect(cfg, timeout_ms=20000):
    try:
        import network
    except ImportError:
        return None
    ssid = cfg.get("ssid")
    if not ssid:
        raise WifiError("config.json has no wifi.ssid")
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, cfg.get("password", ""))
        t0 = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                raise WifiError("Wi-Fi %s: not connected after %d ms" % (ssid, timeout_ms))
            time.sleep_ms(100)
    return wlan.ifconfig()
