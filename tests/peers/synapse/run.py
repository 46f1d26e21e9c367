"""Runs Synapse for the tests and stops it (by its pid) when the test binary that started this
script goes away, however it ends.

    python run.py CONFIG
"""

import os
import signal
import subprocess
import sys
import time

config = sys.argv[1]
parent = os.getppid()
child = subprocess.Popen([sys.executable, "-m", "synapse.app.homeserver", "-c", config])


def stop(*_):
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while child.poll() is None:
    if os.getppid() != parent:
        stop()
    time.sleep(0.2)
sys.exit(child.returncode)
