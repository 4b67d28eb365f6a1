"""The service's FastAPI app under plain uvicorn, no Ray: a process tests can kill -9.

    python tests/serve_plain.py RUN_DIR STATE_DIR PORT
"""

from __future__ import annotations

import sys

import uvicorn

from serving.http import build_app
from serving.service import RankingService, ServeSettings

if __name__ == "__main__":
    run_dir, state_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    service = RankingService(ServeSettings(model=run_dir, state_dir=state_dir, reload_seconds=0))
    uvicorn.run(build_app(lambda: service), host="127.0.0.1", port=port, log_level="warning")
