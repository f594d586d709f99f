"""Reads a `teardown-trace --perfetto` file with Perfetto's own schema (perfetto_trace_pb2,
from PyPI's `perfetto`) and prints, as JSON, what a trace viewer would show: tracks,
slices, instants and flows. Exits non-zero when the file breaks the schema or the
TrackEvent rules (an event on an undeclared track, a slice end without a begin, a slice
ending before it begins)."""

import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

TYPE = pb.TrackEvent.Type


def fail(why):
    sys.exit(f"perfetto_check: {why}")


data = open(sys.argv[1], "rb").read()
trace = pb.Trace()
trace.ParseFromString(data)
# Every field must be one the schema knows, with its declared type: then a re-encode by
# protobuf itself gives back the same bytes.
if trace.SerializeToString() != data:
    fail("the file holds fields Perfetto's schema does not know, or with the wrong type")

tracks, slices, instants, starts, ends = {}, [], [], {}, {}
open_slices = {}
for p in trace.packet:
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        tracks[d.uuid] = {
            "uuid": d.uuid,
            "name": d.name,
            "parent": d.parent_uuid if d.HasField("parent_uuid") else None,
            "pid": d.process.pid if d.HasField("process") else None,
            "process_name": d.process.process_name if d.HasField("process") else None,
        }
    if not p.HasField("track_event"):
        continue
    e = p.track_event
    if e.track_uuid not in tracks:
        fail(f"event {e.name!r} on undeclared track {e.track_uuid}")
    if p.trusted_packet_sequence_id == 0:
        fail("a track event without a sequence id")
    stack = open_slices.setdefault(e.track_uuid, [])
    place = (e.track_uuid, e.name, p.timestamp)
    if e.type == TYPE.Value("TYPE_SLICE_BEGIN"):
        stack.append(len(slices))
        slices.append({"track": e.track_uuid, "name": e.name, "begin": p.timestamp, "end": None})
    elif e.type == TYPE.Value("TYPE_SLICE_END"):
        if not stack:
            fail(f"slice end without a begin on track {e.track_uuid}")
        s = slices[stack.pop()]
        if p.timestamp < s["begin"]:
            fail(f"slice {s['name']} ends before it begins")
        s["end"] = p.timestamp
    elif e.type == TYPE.Value("TYPE_INSTANT"):
        instants.append({"track": e.track_uuid, "name": e.name, "ts": p.timestamp})
    else:
        fail(f"unexpected event type {e.type}")
    for f in e.flow_ids:
        starts[f] = place
    for f in e.terminating_flow_ids:
        ends[f] = place

for uuid, stack in open_slices.items():
    if stack:
        fail(f"slice left open on track {uuid}")
for t in tracks.values():
    if t["parent"] is not None and t["parent"] not in tracks:
        fail(f"track {t['name']!r} has an undeclared parent")

flows = [
    {"from_track": starts[f][0], "from": starts[f][1], "to_track": ends[f][0], "to": ends[f][1]}
    for f in starts
    if f in ends
]
json.dump(
    {"tracks": list(tracks.values()), "slices": slices, "instants": instants, "flows": flows},
    sys.stdout,
)
