"""Memory and CPU of a child process and all its descendants, read from Linux /proc.

`watch` runs a command, samples the resident memory of its whole process tree every
0.1 s (the peak is kept), reads its stderr as it streams and notes the wall and CPU
seconds of the tree when a line first contains each of the given marks. At exit the
kernel's own figures for the child (os.wait4: peak RSS of the largest process, user+sys
CPU of the child and its waited-for descendants) are added.

Example:
    run = watch([sys.executable, "-m", "tfimitate.train", ...],
                marks={"first_step": "First call of the train step"}, log="/tmp/run.log")
    run["marks"]["first_step"]   # {"wall_s": 41.2, "cpu_s": 55.0}
    run["peak_rss_gib"], run["cpu_s"], run["returncode"]
    cpu_at(run["cpu_series"], some_time_time)   # the tree's CPU seconds then
"""

import bisect
import os
import subprocess
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
GIB = 1024 ** 3


def _stat(pid):
    """(ppid, user+sys CPU seconds including waited-for children) of `pid`, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After "pid (comm)": state ppid ... utime(14) stime cutime cstime (1-based in proc(5)).
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICK


def _rss(pid):
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def tree(pid):
    """`pid` and its live descendants."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat:
                children.setdefault(stat[0], []).append(int(name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], ()))
    return found


def sample(pid):
    """(resident bytes, CPU seconds) summed over `pid`'s process tree now."""
    pids = tree(pid)
    return (sum(_rss(p) for p in pids),
            sum(stat[1] for stat in map(_stat, pids) if stat))


def watch(command, marks=(), log=None, interval=0.1, cwd=None, env=None):
    """Runs `command`; returns {"returncode", "wall_s", "peak_rss_gib" (tree, polled),
    "max_rss_gib" (largest process, kernel), "cpu_s" (tree at exit, kernel), "marks":
    {name: {"wall_s", "cpu_s"}} for each mark seen, "stderr_tail", "cpu_series": [(wall
    time, tree CPU s)] of every poll}; stderr goes to `log`, stdout to `log`.stdout."""
    out = open(log + ".stdout" if log else os.devnull, "w", encoding="utf-8")
    err_log = open(log if log else os.devnull, "w", encoding="utf-8")
    start = time.time()
    child = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True,
                             errors="replace", cwd=cwd, env=env)
    peak, series = [0], []
    done = threading.Event()

    def poll():
        while not done.is_set():
            rss, cpu = sample(child.pid)
            peak[0] = max(peak[0], rss)
            series.append((time.time(), cpu))
            done.wait(interval)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    seen, tail = {}, []
    for line in child.stderr:
        err_log.write(line)
        tail = (tail + [line])[-40:]
        for name, text in dict(marks).items():
            if name not in seen and text in line:
                seen[name] = {"wall_s": round(time.time() - start, 2),
                              "cpu_s": round(sample(child.pid)[1], 2)}
    done.set()
    poller.join()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    out.close()
    err_log.close()
    return {"returncode": child.returncode, "wall_s": round(wall, 2),
            "peak_rss_gib": round(peak[0] / GIB, 3),
            "max_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "marks": seen,
            "stderr_tail": "".join(tail), "cpu_series": series}


def cpu_at(series, moment):
    """The tree's CPU seconds at wall time `moment`, from watch()'s "cpu_series" (linear
    between the samples around it)."""
    times = [t for t, _ in series]
    i = bisect.bisect_left(times, moment)
    if i == 0 or i == len(series):
        raise ValueError(f"{moment} is outside the samples ({times[0]} to {times[-1]})")
    (t0, c0), (t1, c1) = series[i - 1], series[i]
    return c0 + (c1 - c0) * (moment - t0) / (t1 - t0)
