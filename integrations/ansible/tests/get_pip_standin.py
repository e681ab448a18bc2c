"""Stand-in for the pip bootstrap script ansible-test downloads from ci-files.testing.ansible.com.

ansible-test creates each sanity venv without pip, then runs this (as ``get_pip_<version>.py``
in ``~/.ansible/test/cache/``, the place its own error message names for a manual download)
with pip's install options: ``pip==24.2 --no-setuptools --no-wheel``. The CI machines reach
PyPI but not that host, so this installs the same pip with the venv's ensurepip and pip
itself. The get-pip-only options are dropped.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"],
                      stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
