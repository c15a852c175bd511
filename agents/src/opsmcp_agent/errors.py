"""Errors the CLI reports to the operator as one clear message and an exit code.

Everything the operator can fix (a model server that is not running, a model without
tool calling, a server command that does not exist, a bad alert file) is one of these;
the CLI prints ``error: <message>`` on stderr and exits with :attr:`AgentError.exit_code`.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every operator-facing failure.

    Args:
        message: what went wrong and what to do about it, in plain sentences.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(AgentError):
    """The operator's input (a flag, an alert payload) is malformed."""

    exit_code = 2


class ModelEndpointError(AgentError):
    """The model endpoint cannot be reached, or does not serve the requested model."""

    exit_code = 3


class ToolCallingUnsupported(AgentError):
    """The model (or the server hosting it) does not support tool calling."""

    exit_code = 4


class ServerConnectionError(AgentError):
    """The opsmcp MCP server could not be started or reached."""

    exit_code = 5


class NoAnswer(AgentError):
    """The model gave no usable answer: nothing, or text that is not an answer (a tool call
    written out as text, chat-template markup), also when a limit stopped the run."""

    exit_code = 6
