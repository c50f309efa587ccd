"""An independent minimal .dt-raw v2 reader (standard library only: struct, json, array).

Usage: python3 dtraw_reader.py FILE.dt-raw
Prints a JSON summary: the header's channels, chunk count, each chunk's flags, the sum of all
codes, and whether every header is exactly the text Python's json.dumps writes for it (which is
what dtollib's writer produces).
"""
import array
import json
import struct
import sys


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    (n,) = struct.unpack_from("<I", data, at)
    at += 4
    raw_header = data[at : at + n]
    at += n
    header = json.loads(raw_header)
    same = json.dumps(header).encode("utf-8") == raw_header
    assert header["format_version"] == 2, header
    n_channels = header["n_channels"]
    typecode = {"int16": "h", "int32": "i"}[header["dtype"]]
    size = struct.calcsize(typecode)
    chunks, flags, code_sum = 0, [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<I", data, at)
        at += 4
        raw = data[at : at + n]
        at += n
        chunk = json.loads(raw)
        same = same and json.dumps(chunk).encode("utf-8") == raw
        need = n_channels * chunk["valid_samples"] * size
        payload = data[at : at + need]
        assert len(payload) == need, (chunk, len(payload), need)
        at += need
        codes = array.array(typecode)
        codes.frombytes(payload)
        if sys.byteorder != "little":
            codes.byteswap()
        assert chunk["seq"] == chunks, chunk
        code_sum += sum(codes)
        flags.append(chunk["flags"])
        chunks += 1
    print(
        json.dumps(
            {
                "n_channels": n_channels,
                "channels": header["channels"],
                "chunks": chunks,
                "flags": flags,
                "code_sum": code_sum,
                "json_as_python_writes_it": same,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
