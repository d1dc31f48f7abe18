"""Peak resident memory of a benchmark's child process, measured from inside it (Linux).

``ru_maxrss`` cannot be used across fork+exec: the child starts with the parent's high-water mark.
The child instead resets its own high-water mark after its imports (``/proc/self/clear_refs``) and
reads ``VmHWM`` at the end. Paste ``CODE`` at the top of a child script.
"""

CODE = '''
def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

def rss_now():
    return _status("VmRSS")

def reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")

def peak_rss():
    return _status("VmHWM")
'''
