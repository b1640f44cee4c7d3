"""The machine a benchmark ran on: CPU model (lscpu), core count and load average.

Example:
    describe()  # {"cpu_model": "AMD EPYC", "cores": 2, "load_average_1min": 3.1}
"""

import os
import subprocess


def describe():
    """CPU model name, logical cores and the 1-minute load average, now."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name:")), "unknown")
    return {"cpu_model": model, "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2)}
