"""A real external MCP server for the gateway's tests and benchmark, written with the SDK:
run as ``python echo_server.py`` it speaks MCP over stdio."""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("echo", instructions="Echoes its input; tells its process id.")


@server.tool(description="Echo the message back.")
def echo(message: str, times: int = 1) -> str:
    return message * times


@server.tool(description="The value of an environment variable (tests the registry's env).")
def env(name: str) -> str:
    return os.environ.get(name, "")


@server.tool(description="The server process's id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="Sleep, then answer (tests the gateway's timeout).")
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "done"


@server.tool(description="Exit the server process (tests the gateway's restart).")
def crash() -> str:
    os._exit(3)


@server.tool(description="Add a tool named `name` that answers its own name (tests the catalogue).")
def grow(name: str) -> str:
    server.add_tool(lambda: name, name=name, description=f"Added at run time: {name}")
    return name


@server.resource("echo://notes/{name}", description="A note by name.")
def note(name: str) -> str:
    return f"note {name}"


if __name__ == "__main__":
    if "--fail" in sys.argv:
        sys.exit(2)
    if "--http" in sys.argv:  # Streamable HTTP on 127.0.0.1:<port>/mcp
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port, stateless_http=True)
    else:
        server.run("stdio")
