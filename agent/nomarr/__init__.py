"""nomarr agent: local music analysis (models, tags, store, API)."""

import os as _os

# numpy's OpenBLAS starts a thread per core for every matrix product and spins them between calls.
# nomarr's products are small (one block of mel frames times the filter bank), so those threads
# only fight the model sessions and the other worker for the same cores: measured on 2 cores,
# the mel of 120 s pushed block by block took 3.1 s wall (1.3 core-s) with them and 0.15 s
# (0.06 core-s) with one thread (bench/profile_scan.py). Set before numpy is first imported;
# a value the user set is kept. The models' own thread pools are set per session.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
