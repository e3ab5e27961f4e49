"""A tiny baseline JPEG encoder for the console screenshot shim (no image library, no download).

EC2 GetConsoleScreenshot returns a JPEG of the instance's console
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleScreenshot.html). The shim
draws a fake text console (dark screen, light block letters) and encodes it as a valid grayscale
baseline JPEG (ITU-T T.81). Each 8x8 block is one flat colour, so only the DC coefficient is
non-zero: every block is one DC difference plus an end-of-block code. The DC Huffman table is the
standard luminance table of T.81 Annex K.3; the AC table holds only the end-of-block symbol.
"""

from __future__ import annotations

import struct

# 3x5 block font: each glyph is five rows of three cells.
_FONT = {
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "110001010100111",
    "3": "110001010001110",
    "4": "101101111001001",
    "5": "111100110001110",
    "6": "011100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001110",
    "-": "000000111000000",
    ":": "000010000010000",
    "_": "000000000000111",
    ".": "000000000000010",
    "/": "001001010100100",
    " ": "000000000000000",
}

_DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # T.81 Table K.3
_DC_VALS = list(range(12))
_AC_BITS = [1] + [0] * 15  # one symbol of length 1 ...
_AC_VALS = [0x00]  # ... end of block


def _codes(bits: list[int], vals: list[int]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes (T.81 Annex C): symbol -> (code, length)."""
    table, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            table[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return table


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def write(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0x00)  # byte stuffing
                self.acc, self.n = 0, 0

    def flush(self) -> bytes:
        if self.n:
            self.write((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1-bits
        return bytes(self.out)


def encode_blocks(levels: list[list[int]]) -> bytes:
    """A grayscale JPEG whose 8x8 block (r, c) has luminance ``levels[r][c]`` (0-255)."""
    rows, cols = len(levels), len(levels[0])
    height, width = rows * 8, cols * 8

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    jfif = segment(0xFFE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = segment(0xFFDB, b"\x00" + bytes([8] * 64))  # DC quantised by 8: value = mean - 128
    sof = segment(0xFFC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    dht = segment(0xFFC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALS) + b"\x10" + bytes(_AC_BITS) + bytes(_AC_VALS))
    sos = segment(0xFFDA, b"\x01\x01\x00\x00\x3f\x00")

    dc, ac = _codes(_DC_BITS, _DC_VALS), _codes(_AC_BITS, _AC_VALS)
    bits, prev = _BitWriter(), 0
    for r in range(rows):
        for c in range(cols):
            value = max(0, min(255, levels[r][c])) - 128
            diff, prev = value - prev, value
            size = abs(diff).bit_length()
            bits.write(*dc[size])
            if size:
                bits.write(diff if diff > 0 else diff + (1 << size) - 1, size)
            bits.write(*ac[0x00])
    return b"\xff\xd8" + jfif + dqt + sof + dht + sos + bits.flush() + b"\xff\xd9"


def console_screenshot(lines: list[str], cols: int = 80, rows: int = 50) -> bytes:
    """A 640x400 JPEG of a dark console showing ``lines`` (upper-cased, up to 20 characters each)."""
    bg, fg = 18, 200
    levels = [[bg] * cols for _ in range(rows)]
    for n, line in enumerate(lines):
        top = 1 + n * 7
        if top + 5 > rows:
            break
        for i, ch in enumerate(line.upper()[: (cols - 1) // 4]):
            glyph = _FONT.get(ch, _FONT[" "])
            for gy in range(5):
                for gx in range(3):
                    if glyph[gy * 3 + gx] == "1":
                        levels[top + gy][1 + i * 4 + gx] = fg
    return encode_blocks(levels)
