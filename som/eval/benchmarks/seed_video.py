"""The one frame LLaVA-1.5 sees of a SEED-Bench-1 video question, chosen as LLaVA chooses it.

Why this exists: LLaVA answers SEED's video questions (dimensions 10-12) from a single image,
the frame its `playground/data/eval/seed_bench/extract_video_frames.py` saves as
`SEED-Bench-video-image/<question_type_id>_<question_id>.png`. To score "all" and "video" as
LLaVA does, somflow must show the model that same frame. The script samples one segment
(`num_segments = 1`) with SEED-Bench's `get_index`, which for n frames picks int((n - 1) / 2)
and nothing when n < 1. Per dimension (videos under LLaVA's folder names):

* 10, Something-Something v2 (`<videos>/20bn-something-something-v2/<data_id>`): the script
  passes n = frame count - 1, so the frame is int((count - 2) / 2) (31 frames -> frame 14).
* 11, EPIC-KITCHENS (`<videos>/EPIC-KITCHENS/<file name of data_id>`): `segment` is
  [start, end] in seconds; s, e = int(min(max(t * fps, 0), count - 1)) for t = start, end; the
  frame is s + int((int(e - s) - 1) / 2).
* 12, Breakfast (`<videos>/BreakfastII_15fps_qvga_sync/<data_id>`): `segment` is [start, end]
  in frames; e = min(end, count); the frame is start + int((e - start - 1) / 2).

A video may also sit directly at `<videos>/<data_id>`. A segment without frames has no middle
frame (the script logs an exception and saves no image); here that is a VideoFrameError naming
the question, as is a missing or unreadable video.

Decoding: LLaVA used decord (10, 11) and PyAV (12); somflow uses OpenCV, already a dependency,
imported only when a frame is extracted. Frame counts for 10 and 12 are counted by decoding
(what PyAV's decode-everything gives, and decord's packet index for a well-formed file); for 11
the container's frame count and frame rate are read, as decord's len() and average fps, rather
than decoding hour-long videos. The frame index is the official one; pixel values can differ
slightly from decord's or PyAV's colour conversion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

VIDEO_DIMENSIONS: tuple[int, ...] = (10, 11, 12)
VIDEO_FOLDERS: dict[int, str] = {
    10: "20bn-something-something-v2",
    11: "EPIC-KITCHENS",
    12: "BreakfastII_15fps_qvga_sync",
}
"""Where extract_video_frames.py looks for each dimension's videos, under the videos folder."""


class VideoFrameError(RuntimeError):
    """A video question's frame cannot be taken; the message names the question and the video."""


def middle(frames: float) -> int:
    """SEED-Bench's get_index(frames, num_segments=1): int((frames - 1) / 2); no frame when frames < 1."""
    if frames < 1:
        raise ValueError(f"a segment of {frames} frames has no middle frame")
    return int(float(frames - 1) / 2)


def frame_index(
    question_type_id: int, frame_count: int, *, fps: float | None = None, segment: Sequence[float] | None = None
) -> int:
    """The index LLaVA's extract_video_frames.py saves for a question of this dimension."""
    if question_type_id == 10:
        return middle(frame_count - 1)
    if segment is None or len(segment) != 2:
        raise ValueError(f"dimension {question_type_id} needs a [start, end] segment, got {segment!r}")
    start, end = segment
    if question_type_id == 11:
        if fps is None or fps <= 0:
            raise ValueError(f"dimension 11 needs the video's frame rate, got {fps!r}")
        first = int(min(max(start * fps, 0), frame_count - 1))
        last = int(min(max(end * fps, 0), frame_count - 1))
        return first + middle(int(last - first))
    if question_type_id == 12:
        if int(start) != start or int(end) != end:
            raise ValueError(f"dimension 12 segments are frame numbers, got {segment!r}")
        first, last = int(start), min(int(end), frame_count)
        return first + middle(last - first)
    raise ValueError(f"question_type_id {question_type_id} is not a SEED-Bench-1 video dimension (10-12)")


def frame_name(record: Mapping[str, Any]) -> str:
    """LLaVA's file name for a video question's frame: `<question_type_id>_<question_id>.png`."""
    return f"{record['question_type_id']}_{record['question_id']}.png"


def video_path(videos: Path, record: Mapping[str, Any]) -> Path:
    """The question's video under `videos`: LLaVA's per-dimension folder first, then `<videos>/<data_id>`."""
    type_id = int(record["question_type_id"])
    data_id = str(record["data_id"])
    relative = Path(data_id).name if type_id == 11 else data_id
    candidates = [videos / VIDEO_FOLDERS.get(type_id, "") / relative, videos / data_id]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise VideoFrameError(
        f"question {record['question_id']}: video not found (looked for {', '.join(str(c) for c in candidates)})"
    )


def _open(path: Path) -> Any:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoFrameError(f"cannot open video {path}")
    return capture


def _decoded_count(path: Path) -> int:
    capture = _open(path)
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def _read(path: Path, index: int, *, seek: bool) -> Any:
    """Frame `index` (BGR array): by seeking (long videos) or by decoding up to it."""
    import cv2

    capture = _open(path)
    try:
        if seek:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        else:
            for _ in range(index):
                if not capture.grab():
                    raise VideoFrameError(f"{path}: ended before frame {index}")
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise VideoFrameError(f"{path}: cannot decode frame {index}")
    return frame


def extract_frame(path: Path, record: Mapping[str, Any]) -> tuple[int, bytes]:
    """(frame index, PNG bytes) of the frame LLaVA's script saves for this video question."""
    import cv2

    type_id = int(record["question_type_id"])
    segment = record.get("segment")
    fps: float | None = None
    if type_id == 11:
        capture = _open(path)
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(capture.get(cv2.CAP_PROP_FPS))
        finally:
            capture.release()
        if count <= 0:
            count = _decoded_count(path)
    else:
        count = _decoded_count(path)
    try:
        index = frame_index(type_id, count, fps=fps, segment=segment)
    except ValueError as exc:
        raise VideoFrameError(f"question {record['question_id']} ({path}, {count} frames): {exc}") from None
    frame = _read(path, index, seek=type_id == 11)
    ok, png = cv2.imencode(".png", frame)
    if not ok:
        raise VideoFrameError(f"{path}: cannot encode frame {index} as PNG")
    return index, png.tobytes()
