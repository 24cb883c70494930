"""WSGI entry point (gunicorn webapp.wsgi)."""

import os

# Compute threads per web process (torch, BLAS, OpenCV, faiss), set before any of them is imported. The
# web runs WEB_CONCURRENCY processes to use the cores, each answering one search at a time per thread;
# more threads per process only oversubscribe the cores: on 2 cores a search by photo took ~45% more CPU
# with each library's default of one thread per core (docs/benchmarks.md, "Load test").
_threads = os.environ.get("SEARCH_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    os.environ.setdefault(_var, _threads)

from django.core.wsgi import get_wsgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
application = get_wsgi_application()

# Load the active index and its models now, in the background, rather than in this process's first search.
from webapp.search.engine import warm_up  # noqa: E402

warm_up()
