"""The kafka-python snippet from the README / DEVELOPERS.md, verbatim, against a broker started
with its default listener (`localhost:9092`): what a newcomer does first must work.

This is the only test that uses port 9092 (marker `port9092`); it is skipped when something
else holds the port."""

import queue
import subprocess
import sys
import threading
import time

import pytest

from strata_e2e import REPO_ROOT

# Verbatim; do not reformat. test_snippet_matches_the_docs keeps it in sync with the docs.
SNIPPET = """\
from kafka import KafkaProducer, KafkaConsumer
producer = KafkaProducer(bootstrap_servers='localhost:9092')
producer.send('void_ness_topic', b'Hello, Kafka!'); producer.flush(); producer.close()
for m in KafkaConsumer('void_ness_topic', bootstrap_servers='localhost:9092',
                       auto_offset_reset='earliest'): print(m.value)
"""

EXPECTED_LINE = "b'Hello, Kafka!'"
SNIPPET_TIMEOUT_S = 60


@pytest.mark.port9092
def test_readme_snippet_produces_and_consumes_on_localhost_9092(broker_factory, port_9092_free, tmp_path):
    # No listener override: the broker's default is PLAINTEXT://localhost:9092.
    broker = broker_factory(port=9092, listener=None)
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET)

    proc = subprocess.Popen(
        [sys.executable, "-u", str(script)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    output = []
    deadline = time.monotonic() + SNIPPET_TIMEOUT_S
    try:
        while EXPECTED_LINE not in output:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (proc.poll() is not None and lines.empty()):
                break
            try:
                output.append(lines.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                pass
    finally:
        # The consumer loop never ends by design: kill it once we have our answer.
        proc.kill()
        proc.wait(timeout=10)
        reader.join(timeout=5)
    transcript = "\n".join(output[-40:])
    assert EXPECTED_LINE in output, (
        f"the snippet did not print {EXPECTED_LINE} within {SNIPPET_TIMEOUT_S} s "
        f"(exit code {proc.returncode}); its output:\n{transcript}"
    )
    assert broker.running, "the broker must still be running after the snippet"


def test_snippet_matches_the_docs():
    docs = [REPO_ROOT / name for name in ("DEVELOPERS.md", "README.md")]
    checked = []
    for doc in docs:
        if doc.is_file() and "void_ness_topic" in doc.read_text():
            assert SNIPPET in doc.read_text(), (
                f"{doc.name} shows a different kafka-python snippet than tests/e2e/test_snippet.py; "
                "keep them identical (the test runs it verbatim)"
            )
            checked.append(doc.name)
    if not checked:
        pytest.skip("no DEVELOPERS.md or README.md with the snippet yet")
