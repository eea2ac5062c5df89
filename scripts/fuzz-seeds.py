#!/usr/bin/env python3
"""Regenerate the committed fuzz seed corpus (fuzz/corpus/<target>/). Deterministic.

decode: real MQTT packets (first byte selects the decoder's starting state: 0 before
CONNECT, 1 after a 3.1.1 CONNECT, 2 after a 5.0 CONNECT). config: real configuration
texts (first byte selects the parser). session, topic, authz read their input through the
`arbitrary` crate, so any bytes are meaningful: seeded pseudo-random blobs of a few sizes.
"""
import os
import random
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text):
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(level, client_id="c1", flags=0x02, props=b"", keep_alive=30, will=b""):
    name = s("MQIsdp") if level == 3 else s("MQTT")
    body = name + bytes([level, flags]) + struct.pack(">H", keep_alive)
    if level == 5:
        body += varint(len(props)) + props
    body += s(client_id) + will
    return packet(0x10, body)


def publish(topic, payload, qos=0, pid=1, v5=False, props=b"", retain=False):
    body = s(topic)
    if qos:
        body += struct.pack(">H", pid)
    if v5:
        body += varint(len(props)) + props
    return packet(0x30 | (qos << 1) | int(retain), body + payload)


def subscribe(pid, filters, v5=False, props=b""):
    body = struct.pack(">H", pid)
    if v5:
        body += varint(len(props)) + props
    for f, opts in filters:
        body += s(f) + bytes([opts])
    return packet(0x82, body)


def unsubscribe(pid, filters, v5=False):
    body = struct.pack(">H", pid) + (b"\x00" if v5 else b"")
    for f in filters:
        body += s(f)
    return packet(0xA2, body)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def decode_seeds():
    v5_props = b"\x11\x00\x00\x00\x3c" + b"\x21\x00\x0a" + b"\x27\x00\x01\x00\x00"
    will = s("will/topic") + s("bye")
    seeds = {
        "connect-311": b"\x00" + connect(4),
        "connect-31": b"\x00" + connect(3, flags=0x02),
        "connect-5-props": b"\x00" + connect(5, props=v5_props),
        "connect-5-will-userpass": b"\x00" + connect(5, flags=0xEE, will=b"\x00" + will)
        + s("user") + s("pass"),
        "connect-311-will": b"\x00" + connect(4, flags=0x2E, will=will),
        "publish-qos0-311": b"\x01" + publish("a/b", b"hello"),
        "publish-qos1-311": b"\x01" + publish("a/b", b"x", qos=1, pid=7),
        "publish-qos2-5-props": b"\x02"
        + publish("a/b", b"{}", qos=2, pid=9, v5=True,
                  props=b"\x01\x01" + b"\x02\x00\x00\x00\x0a" + b"\x23\x00\x01"
                  + b"\x26" + s("k") + s("v")),
        "subscribe-311": b"\x01" + subscribe(1, [("a/+/c", 1), ("#", 0)]),
        "subscribe-5-shared": b"\x02" + subscribe(2, [("$share/g/a/#", 0x2E)], v5=True,
                                                  props=b"\x0b\x05"),
        "unsubscribe-5": b"\x02" + unsubscribe(3, ["a/+", "$share/g/a/#"], v5=True),
        "acks-5": b"\x02" + packet(0x40, b"\x00\x01") + packet(0x50, b"\x00\x02\x10\x00")
        + packet(0x62, b"\x00\x02") + packet(0x70, b"\x00\x02"),
        "ping-disconnect-5": b"\x02" + packet(0xC0, b"") + packet(0xE0, b"\x04\x05\x11\x00\x00\x00\x00"),
        "auth-5": b"\x02" + packet(0xF0, b"\x19\x08\x15" + s("SCRAM")),
        "server-packets-5": b"\x02" + packet(0x20, b"\x00\x00\x03\x21\x00\x0a")
        + packet(0x90, b"\x00\x01\x00\x01\x02") + packet(0xB0, b"\x00\x01\x00\x00\x11")
        + packet(0xD0, b""),
        "pipelined-311": b"\x00" + connect(4) + subscribe(1, [("a/b", 2)])
        + publish("a/b", b"p", qos=2, pid=2) + packet(0xC0, b"") + packet(0xE0, b""),
    }
    for name, data in seeds.items():
        write("decode", name, data)


def config_seeds():
    fixtures = os.path.join(ROOT, "crates", "config", "tests", "fixtures", "examples")
    n = 0
    for dirpath, _, files in sorted(os.walk(fixtures)):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    n += 1
                    write("config", f"yaml-{n}", b"\x00" + fh.read())
    passwords = (b'[client1]\npassword = "$pbkdf2-sha512$i=100000,l=64$HqJwOCHweNk1pLryiu3RsA'
                 b'$KVSvxKYcibIG5S5n55RvxKRTdAAfCUtBJoy5IuFzdSZyzkwvUcU+FPawEWFPn+06JyZsndfRTfpiEh+2eSJLkg"\n'
                 b'[client1.attributes]\nfloor = "floor1"\nsite = "site1"\n')
    attributes = (b'[root]\nsubject = "CN = Contoso Root CA Cert, OU = Engineering, C = US"\n'
                  b'[root.attributes]\norganization = "contoso"\n\n[smart-fan]\n'
                  b'subject = "CN = smart-fan"\n[smart-fan.attributes]\nbuilding = "17"\n')
    write("config", "secrets-toml", b"\x01" + passwords + b"\x00" + attributes)
    write("config", "passwords-toml", b"\x02" + passwords)
    write("config", "x509-subjects", b"\x03" + b"root\tCN = Contoso Root CA Cert, OU = Engineering, C = US\t"
          b"organization=contoso\nfan\t/CN=smart-fan/O=x\tbuilding=17\n")


def blob_seeds(target, count, seed):
    rng = random.Random(seed)
    for i in range(count):
        size = [16, 64, 256, 1024][i % 4]
        write(target, f"random-{i}", bytes(rng.randrange(256) for _ in range(size)))


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    decode_seeds()
    config_seeds()
    blob_seeds("session", 8, 1)
    blob_seeds("topic", 4, 2)
    blob_seeds("authz", 4, 3)
    for t in sorted(os.listdir(CORPUS)):
        print(t, len(os.listdir(os.path.join(CORPUS, t))))


if __name__ == "__main__":
    main()
