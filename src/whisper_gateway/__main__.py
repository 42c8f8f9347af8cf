"""`python -m whisper_gateway`: serve the gateway with uvicorn (settings: whisper_gateway.settings)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    import uvicorn

    from whisper_gateway.app import create_app
    from whisper_gateway.settings import Settings

    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m whisper_gateway",
                                     description="OpenAI-compatible speech API in front of Triton")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--triton-url", action="append",
                        help="Triton gRPC address (repeat for several); GATEWAY_TRITON_URLS")
    args = parser.parse_args(argv)
    settings = replace(settings, host=args.host, port=args.port)
    if args.triton_url:
        settings = replace(settings, triton_urls=tuple(args.triton_url))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="info", timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
