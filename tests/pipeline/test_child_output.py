"""A child's output reaches our stderr byte for byte, and its last bytes are kept."""

from __future__ import annotations

import io

from ifexp.child_output import PassedThrough


class Trickle(io.RawIOBase):
    """A pipe that yields at most 5 bytes per read, so chunks split the multi-byte █ characters."""

    def __init__(self, data: bytes):
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(5, len(buffer), len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


OUTPUT = "fine-tune: 50%|█████     | 2/4\rfine-tune: 100%|██████████| 4/4\nTraceback: boom\n".encode()


def test_the_output_is_passed_through_whole_and_its_end_kept(capfdbinary):
    output = PassedThrough(keep=16)
    output.copy(io.BufferedReader(Trickle(OUTPUT)))
    assert capfdbinary.readouterr().err == OUTPUT
    assert output.tail == OUTPUT[-16:] and output.tail_text() == "Traceback: boom\n"
