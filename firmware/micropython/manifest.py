# Freezes the agent into a MicroPython image, so its bytecode runs from flash and costs no heap
# (loaded from .mpy files, the code takes about 90 KB of RAM on a 64-bit port). Build with the
# ESP-IDF toolchain, from a MicroPython checkout (not done here: this machine has no ESP-IDF):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/firmware/micropython/manifest.py
include("$(PORT_DIR)/boards/manifest.py")
package("ztfw")
# main.py and config.json stay on the board's filesystem (copied by `ztfl flash esp32`).
