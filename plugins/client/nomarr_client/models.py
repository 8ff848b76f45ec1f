"""The HTTP API contract (DESIGN §5), written once: the agent validates requests and serialises
responses with these models, the plugins parse answers with the same ones, and the OpenAPI document
is generated from them. pydantic only, so a host process (beets, Music Assistant) can import it
without numpy or onnxruntime.

Rules that keep the contract stable: responses only ever gain optional fields; request models
reject unknown fields (``extra="forbid"``) so a typo in a plugin is a 400, not a silently ignored
filter; every list the caller can size has an upper bound so one request cannot ask for the whole
library.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

API_VERSION = 1
API_PREFIX = "/api/v1"
SERVICE_TYPE = "_nomarr._tcp.local."

MAX_LIMIT = 500
MAX_VECTOR_DIM = 4096
MAX_TEXT = 500


def _path_length(v: str) -> str:
    if not 1 <= len(v) <= 4096:
        raise ValueError("a path has 1 to 4096 characters")
    return v


# A file system path as text: the name's bytes decoded as UTF-8, a byte that is not UTF-8 being a
# lone surrogate U+DC80..U+DCFF (os.fsdecode; JSON "\udce9"). pydantic's length constraints refuse
# such strings, so the length is checked here instead; the schema says the same as before.
FsPath = Annotated[
    str,
    AfterValidator(_path_length),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 4096}),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors -------------------------------------------------------------------------------------


class ErrorBody(_Response):
    """What went wrong. ``code`` is stable and machine-readable; ``message`` is for people."""

    code: str = Field(
        description="bad-request | unauthorized | forbidden | not-found | "
        "method-not-allowed | too-large | unsupported-media-type | unprocessable | "
        "busy | unavailable | internal"
    )
    message: str
    details: list[dict[str, object]] | None = None


class ErrorResponse(_Response):
    """Every non-2xx answer has this shape."""

    error: ErrorBody


# -- health / status ----------------------------------------------------------------------------


class Health(_Response):
    """``GET /health``: unauthenticated liveness, no library details."""

    status: Literal["ok"] = "ok"
    version: str
    api: int = API_VERSION


class RootStatus(_Response):
    path: str
    watch: Literal["off", "event", "poll"]
    poll_interval_s: float | None = None
    exists: bool
    tracks: int = 0


class ScanInfo(_Response):
    started: float | None = None
    finished: float | None = None
    reason: str | None = None
    summary: dict[str, object] | None = None


class QueueStatus(_Response):
    pending: int = Field(description="batches of paths waiting to be scanned")
    pending_paths: int = 0
    running: bool
    current: str | None = Field(default=None, description="what the scanner is doing now")
    last_scan: ScanInfo | None = None
    scans_completed: int = Field(default=0, description="scans finished since the agent started")
    totals: dict[str, int] = Field(
        default_factory=dict, description="analysed/reused/written/failed/… summed over those scans"
    )
    progress: ScanProgress | None = Field(
        default=None, description="the running scan's files done, rate and ETA"
    )


class ScanProgress(_Response):
    """Where the running scan is: files done of the files it has to process."""

    done: int
    total: int
    file: str | None = Field(default=None, description="the file finished last")
    started: float = Field(description="Unix time the processing began")
    rate_per_min: float = Field(default=0.0, description="files per minute so far")
    eta_s: float | None = Field(default=None, description="seconds left at that rate")


class PullProgress(_Response):
    """A model download in progress (``POST /models/{id}/pull``)."""

    id: str
    file: str
    done: int = Field(description="bytes of this file downloaded")
    total: int | None = Field(default=None, description="bytes of this file (when known)")
    started: float


class ModelStatus(_Response):
    id: str
    kind: str
    installed: bool
    loaded: bool = False
    builtin: bool = False
    licence: str | None = None


class Status(_Response):
    """``GET /status``."""

    version: str
    agent_id: str
    api: int = API_VERSION
    roots: list[RootStatus]
    queue: QueueStatus
    models: list[ModelStatus]
    providers: list[str]
    tracks: dict[str, int] = Field(default_factory=dict, description="track counts by status")
    workers_loaded: bool = Field(
        default=False, description="analysis workers (and their models) in memory"
    )
    uptime_s: float = 0.0
    memory_mb: dict[str, float] = Field(
        default_factory=dict,
        description="resident memory: agent (the server process) and workers (analysis processes)",
    )
    pull: PullProgress | None = Field(default=None, description="a model download running now")


# -- tracks -------------------------------------------------------------------------------------


class StreamInfo(_Response):
    """What a streamed recording is (``kind == "stream"`` items): the provider's item it was heard
    as through ``POST /ingest``."""

    id: int
    provider: str | None = None
    provider_id: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    created: float | None = None


class Track(_Response):
    """One file the agent knows — or, with ``kind == "stream"``, a recording it heard through the
    streaming-ingest API and holds no file of (``id`` is then the stream's id, ``path`` is empty
    and ``stream`` says which provider item it is)."""

    id: int
    path: str
    size: int | None = None
    duration: float | None = None
    container: str | None = None
    codec: str | None = None
    recording_id: int | None = None
    status: str = "ok"
    error: str | None = None
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    mb_recording: str | None = None
    isrc: str | None = None
    bpm: float | None = Field(default=None, description="tempo (DSP descriptor), when known")
    key: str | None = Field(default=None, description="key in ID3v2.4 notation (Am, F#)")
    camelot: str | None = Field(default=None, description="key in Camelot notation (8A)")
    energy: float | None = Field(default=None, description="energy 0..1 (docs/descriptors.md)")
    kind: Literal["file", "stream"] = "file"
    stream: StreamInfo | None = None


class ModelScores(_Response):
    """One model's stored result for a track's recording."""

    model: str
    tag_prefix: str
    provenance: str
    profile: str
    patches: int
    scores: dict[str, float]
    tiers: dict[str, str] = Field(default_factory=dict)
    complete: bool = Field(
        default=True,
        description="false: the analysed file decoded only partly (damaged or truncated) and no "
        "complete file of the recording has been analysed yet",
    )


class TrackDetail(Track):
    """``GET /tracks/{id}``: the track, its analyses, and the ``nom:`` tags last written."""

    analyses: list[ModelScores] = Field(default_factory=list)
    tags: dict[str, str] = Field(
        default_factory=dict, description="the nom: keys this file carries once written"
    )
    tags_written: bool = Field(
        default=False, description="the file holds exactly these tags (last write is current)"
    )
    embeddings: list[str] = Field(
        default_factory=list, description="embedding spaces holding this recording"
    )
    same_recording: list[int] = Field(
        default_factory=list, description="other files of the same recording"
    )
    descriptors: dict[str, Any] | None = Field(
        default=None,
        description="DSP descriptors: tempo (bpm, confidence, first beat, octave choice), key "
        "(ID3, Camelot, Open Key, strength), energy, danceability, onset rate, dynamic range, "
        "loudness (LUFS, LRA, true peak, ReplayGain), silence and regions (docs/descriptors.md)",
    )


class TrackPage(_Response):
    """``GET /tracks``: one page, ordered by id."""

    items: list[Track]
    total: int
    offset: int
    limit: int
    next_offset: int | None = None


class TrackList(_Response):
    """``GET /tracks/lookup``: every file matching (several when copies share a recording)."""

    items: list[Track]


# -- queries ------------------------------------------------------------------------------------


class Filters(_Request):
    """Restrictions on answers. ``under`` folders must lie inside the library roots."""

    under: list[str] | None = Field(default=None, max_length=64)
    min_duration: float | None = Field(default=None, ge=0)
    max_duration: float | None = Field(default=None, ge=0)
    min_scores: dict[str, float] | None = Field(
        default=None, description="label → minimum score (0..1)"
    )
    min_bpm: float | None = Field(default=None, ge=0, le=1000)
    max_bpm: float | None = Field(default=None, ge=0, le=1000)
    keys: list[str] | None = Field(
        default=None,
        max_length=24,
        description="keys to keep, any notation: Am, F#, 8A (Camelot), 1m (Open Key)",
    )
    min_energy: float | None = Field(default=None, ge=0, le=1)
    max_energy: float | None = Field(default=None, ge=0, le=1)
    files_only: bool = Field(
        default=False,
        description="only library files: leave out recordings known only as a stream (hosts "
        "that can play files only, such as beets and Navidrome, set this)",
    )

    @model_validator(mode="after")
    def _check(self) -> Filters:
        for lo, hi, name in (
            (self.min_bpm, self.max_bpm, "bpm"),
            (self.min_energy, self.max_energy, "energy"),
        ):
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"min_{name} is above max_{name}")
        if self.keys is not None and any(not k or len(k) > 16 for k in self.keys):
            raise ValueError("keys: each key is 1 to 16 characters")
        if self.min_scores is not None:
            if len(self.min_scores) > 64:
                raise ValueError("at most 64 min_scores")
            for k, v in self.min_scores.items():
                if not 0.0 <= v <= 1.0 or not k or len(k) > 200:
                    raise ValueError(f"min_scores[{k!r}] must be a label with a score in 0..1")
        return self


class _Seed(_Request):
    """A track given by id or by path (exactly one)."""

    track_id: int | None = Field(default=None, ge=1)
    path: FsPath | None = Field(default=None)

    def _one_seed(self, *extra: object) -> None:
        given = sum(x is not None for x in (self.track_id, self.path, *extra))
        if given != 1:
            raise ValueError("give exactly one of track_id, path" + (", vector" if extra else ""))


class SimilarRequest(_Seed):
    """``POST /similar``: nearest tracks to a track, a streamed recording or a raw embedding."""

    stream_id: int | None = Field(
        default=None, ge=1, description="seed: a streamed recording (POST /ingest)"
    )
    vector: list[float] | None = Field(default=None, min_length=1, max_length=MAX_VECTOR_DIM)
    model: str | None = Field(
        default=None,
        max_length=200,
        description="embedding space; default: the best the library has",
    )
    limit: int = Field(default=10, ge=1, le=MAX_LIMIT)
    distinct: bool = Field(default=False, description="drop other files of the seed's recording")
    filters: Filters | None = None

    @model_validator(mode="after")
    def _check(self) -> SimilarRequest:
        given = sum(x is not None for x in (self.track_id, self.path, self.vector, self.stream_id))
        if given != 1:
            raise ValueError("give exactly one of track_id, path, stream_id, vector")
        if self.vector is not None and self.model is None:
            raise ValueError("a vector query needs model (the embedding space it belongs to)")
        return self


class Hit(Track):
    """A track in an answer, with how close it is to the question."""

    distance: float
    similarity: float
    same_recording: bool = False
    score: float | None = None


class HitList(_Response):
    """``POST /similar`` answer."""

    model: str | None = None
    seed: Track | None = Field(default=None, description="the seed track (never among the items)")
    items: list[Hit]


class MoodLabel(_Response):
    label: str
    models: list[str]


class MoodList(_Response):
    """``GET /moods``: every label some model in the library scores (and whether free text works)."""

    items: list[MoodLabel]
    zero_shot: bool = Field(description="a CLAP model is installed: any text works as a mood")


class TagKey(_Response):
    """One ``nom:`` key as the agent wrote it into files (DESIGN §2), parsed."""

    key: str = Field(
        description="the full key, lowercase, e.g. nom:onnx_musicnn_msd-1_msd50_1_happy"
    )
    tracks: int = Field(
        description="ok tracks whose file carries this key (per the agent's last write)"
    )
    kind: Literal["score", "tier", "provenance", "descriptor"]
    prefix: str = Field(description="nom:<framework>_<embedder>_<embedder_id>_<model>_<model_id>_")
    label: str | None = Field(default=None, description="label slug for score and tier keys")
    tier: Literal["high", "medium", "low"] | None = None
    model: str | None = Field(
        default=None, description="id of the model whose analyses use this prefix"
    )


class TagKeyList(_Response):
    """``GET /tags``: every ``nom:`` key written into the library's files, so host configs (Navidrome's
    ``[Tags]``) can declare exactly what TagLib will find."""

    items: list[TagKey]


class MoodPlaylistRequest(_Request):
    """``POST /playlists/mood``: the tracks scoring highest for a label. With CLAP installed a label
    no model scores is answered zero-shot (the label as text)."""

    label: str = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=25, ge=1, le=MAX_LIMIT)
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    filters: Filters | None = None


class RadioRequest(_Seed):
    """``POST /playlists/radio``: the seed, then its neighbourhood as a smooth walk."""

    model: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=25, ge=1, le=MAX_LIMIT)
    exclude_track_ids: list[int] = Field(
        default_factory=list, max_length=MAX_LIMIT, description="already played: never returned"
    )
    filters: Filters | None = None
    harmonic: bool = Field(
        default=False,
        description="DJ mode: each next track within ±6 % BPM (or half/double) of the previous "
        "and in a compatible Camelot key",
    )

    @model_validator(mode="after")
    def _check(self) -> RadioRequest:
        self._one_seed()
        return self


class TrackRef(_Seed):
    @model_validator(mode="after")
    def _check(self) -> TrackRef:
        self._one_seed()
        return self


class PathPlaylistRequest(_Request):
    """``POST /playlists/path``: a song path from one track to another."""

    start: TrackRef
    end: TrackRef
    model: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=12, ge=2, le=MAX_LIMIT)
    filters: Filters | None = None
    harmonic: bool = Field(
        default=False,
        description="DJ mode: each next track within ±6 % BPM (or half/double) of the previous "
        "and in a compatible Camelot key",
    )


class TextPlaylistRequest(_Request):
    """``POST /playlists/text``: tracks nearest to a description (needs a CLAP model)."""

    text: str = Field(min_length=1, max_length=MAX_TEXT)
    limit: int = Field(default=25, ge=1, le=MAX_LIMIT)
    filters: Filters | None = None


class Playlist(_Response):
    """Every ``POST /playlists/*`` answer: tracks in play order."""

    kind: Literal["mood", "radio", "path", "text"]
    model: str | None = None
    zero_shot: bool = False
    items: list[Hit]


# -- analysis -----------------------------------------------------------------------------------


class AnalyzeRequest(_Request):
    """``POST /analyze`` with JSON: a file inside a library root. To analyse a file from another
    machine, POST its bytes instead (``Content-Type: application/octet-stream`` or
    ``multipart/form-data`` with a ``file`` part) and name it with ``?filename=``."""

    path: FsPath
    profile: str | None = Field(default=None, max_length=64)
    models: list[str] | None = Field(default=None, max_length=16)
    embedding: bool = Field(default=False, description="include the embeddings")


class ModelResult(_Response):
    tag_prefix: str
    provider: str | None = None
    patches: int
    provenance: str
    scores: dict[str, float]
    tiers: dict[str, str] = Field(default_factory=dict)
    top5: list[str] = Field(default_factory=list)
    embedding_dim: int | None = None
    embedding: list[float] | None = None
    complete: bool = Field(
        default=True, description="false: only part of the audio could be decoded"
    )


class AnalyzeResponse(_Response):
    """Scores, tiers and the ``nom:`` tags a write would put in the file (nothing is written)."""

    path: str | None = Field(default=None, description="the library path; null for an upload")
    filename: str | None = None
    source: Literal["analysis", "library"] = Field(
        description="analysed now, or the library's current stored result"
    )
    duration: float | None = None
    profile: str | None = None
    models: dict[str, ModelResult]
    tags: dict[str, str]
    warnings: list[str] = Field(default_factory=list)
    elapsed_s: float | None = None


# -- models -------------------------------------------------------------------------------------


class ModelInfo(_Response):
    id: str
    kind: str
    installed: bool
    builtin: bool = False
    licence: str | None = None
    source: str | None = None
    size: int | None = Field(default=None, description="bytes to download (all files)")
    labels: int = 0
    embedding_dim: int | None = None
    needs: str | None = Field(default=None, description="the embedder a head runs on")
    licence_url: str | None = None
    name: str | None = None
    providers: dict[str, int] = Field(
        default_factory=dict, description="execution provider → stored analyses that ran on it"
    )
    precision: str | None = Field(default=None, description="fp32, fp16 or int8 weights")
    tag_prefix: str | None = Field(
        default=None, description="the nom: prefix of the keys its scores are written under"
    )
    default: bool = Field(
        default=False, description="among the models the agent runs on every file"
    )
    provenance: str | None = Field(
        default=None,
        description="the provenance an analysis with the agent's profile "
        "would record now (installed models only); a file carrying it is current",
    )


class ModelList(_Response):
    items: list[ModelInfo]


class FileCheck(_Response):
    """One model file's sha256 check."""

    name: str
    role: str
    present: bool
    ok: bool = Field(description="present and matching the expected sha256 (when one is known)")
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    pinned: bool = Field(
        default=False, description="the expected hash was pinned at the first download"
    )
    size: int | None = None


class ModelVerify(_Response):
    """``POST /models/{id}/verify``: every file hashed against its manifest or pin."""

    id: str
    installed: bool
    ok: bool = Field(description="every file needed to run is present and matches")
    files: list[FileCheck]


class LabelStats(_Response):
    label: str
    histogram: list[int] = Field(description="recordings per score bin; bins split 0..1 evenly")
    mean: float | None = None
    high: float = Field(description="current lower bound of tier high")
    medium: float = Field(description="current lower bound of tier medium")
    calibrated: bool = Field(description="bounds from this library's calibration, not defaults")
    tracks_high: int = 0


class ModelStats(_Response):
    """``GET /models/{id}/stats``: what a model has done in this library."""

    id: str
    name: str | None = None
    kind: str
    licence: str | None = None
    licence_url: str | None = None
    source: str | None = None
    installed: bool
    tracks: int = Field(description="present tracks with an analysis by this model")
    recordings: int = 0
    providers: dict[str, int] = Field(
        default_factory=dict, description="execution provider → analyses that ran on it"
    )
    precision: str | None = None
    calibrated_at: int | None = Field(
        default=None, description="recordings analysed when the tiers were last calibrated"
    )
    labels: list[LabelStats] = Field(default_factory=list)


class ImportRequest(_Request):
    """``POST /models/import``: an Essentia model's metadata (its ``.json``) becomes a manifest;
    the model file is then pulled from ``url`` (default: the one the metadata names)."""

    metadata: dict[str, object] = Field(description="the Essentia metadata document")
    url: str | None = Field(default=None, max_length=2048, description="the ONNX file's URL")
    sha256: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        description="the model file's expected sha256, 64 hex digits (else pinned at the first "
        "download)",
    )
    dry_run: bool = Field(default=False, description="only show the manifest, write nothing")

    @model_validator(mode="after")
    def _check(self) -> ImportRequest:
        # checked here, not as a schema pattern: fuzzers' regex engines choke on lone surrogates
        if self.sha256 is not None and not all(c in "0123456789abcdefABCDEF" for c in self.sha256):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return self


class ImportResponse(_Response):
    id: str
    name: str
    kind: str
    licence: str | None = None
    licence_url: str | None = None
    labels: list[str] = Field(default_factory=list)
    needs: str | None = None
    files: list[dict[str, object]] = Field(default_factory=list)
    written: bool = Field(description="the manifest was written (false for a dry run)")
    installed: bool = False


class PullResponse(_Response):
    id: str
    status: Literal["installed", "already-installed"]
    files: list[str] = Field(default_factory=list)


# -- console ------------------------------------------------------------------------------------


class BrowseItem(Track):
    """A row of the library table."""

    score: float | None = Field(default=None, description="the score of the label asked about")
    tier: str | None = None
    top: list[str] = Field(
        default_factory=list, description="labels at tier high, strongest first (at most 3)"
    )


class BrowsePage(_Response):
    """``GET /browse``: one page of a searched, filtered, sorted library."""

    items: list[BrowseItem]
    total: int
    offset: int
    limit: int
    sort: str
    order: Literal["asc", "desc"]
    label: str | None = None
    model: str | None = Field(default=None, description="the model whose scores were used")


class RecentAnalysis(_Response):
    track: Track
    model: str
    created: float


class RecentList(_Response):
    """``GET /analyses/recent``."""

    items: list[RecentAnalysis]


class Waveform(_Response):
    """``GET /tracks/{id}/waveform``: the loudest sample per time bucket, for drawing."""

    duration: float
    peaks: list[float] = Field(description="0..1, one per bucket, evenly spread over the track")


class FileTags(_Response):
    """``GET /tracks/{id}/file-tags``: the ``nom:`` tags read from the file now."""

    path: str
    tags: dict[str, str]
    mood: str | None = None
    error: str | None = None


class MapPoints(_Response):
    """``GET /map``: one recording per point in a 2-D projection of an embedding space."""

    model: str
    method: str = Field(description="how the points were placed (see docs/console.md)")
    explained: list[float] = Field(
        default_factory=list, description="share of the variance each axis explains"
    )
    track_ids: list[int] = Field(description="a present file of each point's recording")
    x: list[float]
    y: list[float]
    label: str | None = None
    values: list[float] | None = Field(
        default=None, description="the label's score per point (-1: not scored)"
    )


class ScanRequest(_Request):
    """``POST /scan``: queue a rescan of some paths (default: every root)."""

    paths: list[str] | None = Field(default=None, max_length=1000)


class ScanQueued(_Response):
    queued: int = Field(description="paths queued")
    pending: int


# -- listens (docs/listens.md) --------------------------------------------------------------------

MAX_USER = 200
MAX_LISTENS = 5000
MAX_COUNTERS = 5000
MAX_FAVOURITES = 50000
OUTCOMES = ("completed", "played", "skipped")


class Identity(_Request):
    """What a listen, a favourite or a stream is of: whatever the source knows. The agent matches
    it to a library recording (docs/listens.md, "The match rule")."""

    track_id: int | None = Field(default=None, ge=1, description="the agent's track id")
    stream_id: int | None = Field(default=None, ge=1, description="the agent's stream id")
    mbid: str | None = Field(default=None, max_length=64, description="MusicBrainz recording id")
    isrc: str | None = Field(default=None, max_length=32)
    provider_id: str | None = Field(
        default=None,
        max_length=1000,
        description="the source's own item id or URI (e.g. Music Assistant's spotify://track/…)",
    )
    artist: str | None = Field(default=None, max_length=1000)
    title: str | None = Field(default=None, max_length=1000)
    album: str | None = Field(default=None, max_length=1000)
    duration: float | None = Field(default=None, gt=0, le=86400, description="seconds")


class ListenItem(Identity):
    """One listen."""

    ts: float = Field(gt=0, lt=32503680000, description="when it was played (unix seconds)")
    outcome: Literal["completed", "played", "skipped"] | None = Field(
        default=None,
        description="omitted: decided from seconds (completed after half the track or 4 min, "
        "skipped under 30 s)",
    )
    seconds: float | None = Field(default=None, ge=0, le=86400, description="seconds played")
    id: str | None = Field(
        default=None,
        max_length=300,
        description="the source's id of this listen; sending the same id twice stores it once "
        "(default: source, second and what was played)",
    )


class ListensRequest(_Request):
    """``POST /users/{user}/listens``."""

    source: str = Field(default="api", min_length=1, max_length=64)
    listens: list[ListenItem] = Field(min_length=1, max_length=MAX_LISTENS)


class ImportResult(_Response):
    """What an import or sync stored."""

    received: int
    added: int
    duplicates: int = Field(description="already stored (replays add nothing)")
    invalid: int = 0
    matched: int = Field(description="added listens matched to a library recording")
    unmatched: int = Field(description="added listens kept with their ids, not (yet) matched")
    by_rule: dict[str, int] = Field(
        default_factory=dict, description="matched listens per match rule"
    )
    favourites: int = 0
    errors: list[str] = Field(default_factory=list, description="the first unreadable entries")
    username: str | None = Field(default=None, description="the export's ListenBrainz user")


class ListenBrainzSync(_Request):
    """``POST /users/{user}/listenbrainz/sync``: fetch new listens from the ListenBrainz API (the
    agent's ``listenbrainz_url`` setting, https://api.listenbrainz.org by default)."""

    lb_user: str | None = Field(
        default=None, max_length=MAX_USER, description="ListenBrainz user name (default: user)"
    )
    token: str | None = Field(
        default=None, max_length=200, description="the user's ListenBrainz token"
    )
    max_pages: int = Field(default=1000, ge=1, le=100000, description="of 1000 listens each")

    @model_validator(mode="after")
    def _check(self) -> ListenBrainzSync:
        # the token travels in a header: visible ASCII only (a CR/LF would be header injection)
        if self.token is not None and not all(33 <= ord(c) < 127 for c in self.token):
            raise ValueError("token must be printable ASCII without spaces")
        return self

    remember: bool = Field(
        default=False,
        description="keep the token on the agent: it then syncs by itself every "
        "listenbrainz_sync_s, and a POST with no body syncs again",
    )


class SyncResult(ImportResult):
    """``POST /users/{user}/listenbrainz/sync``."""

    pages: int
    fetched: int
    waited_s: float = Field(description="seconds slept because the API's rate limit asked")
    cursor: float | None = Field(
        default=None, description="listens up to this time are stored; the next sync starts here"
    )
    complete: bool = Field(description="false: stopped early (page limit or rate limit)")


class CounterItem(Identity):
    """One song's counters as a polled source reports them."""

    item: str = Field(min_length=1, max_length=300, description="the source's song id")
    plays: int = Field(ge=0, le=10**9)
    skips: int = Field(default=0, ge=0, le=10**9)
    last_played: float | None = Field(default=None, gt=0, lt=32503680000)
    starred: bool | None = Field(default=None, description="true: a favourite; false: not")
    starred_at: float | None = Field(default=None, gt=0, lt=32503680000)


class CountersRequest(_Request):
    """``POST /users/{user}/counters``: play counts from Subsonic/Navidrome or beets; every
    rise since the last report becomes listens (docs/listens.md)."""

    source: str = Field(min_length=1, max_length=64, description="e.g. subsonic:<server>, beets")
    items: list[CounterItem] = Field(max_length=MAX_COUNTERS)
    complete: bool = Field(
        default=False,
        description="these are all of the source's starred items: others lose their star",
    )


class FavouriteItem(Identity):
    key: str = Field(min_length=1, max_length=300, description="the source's id of the item")
    score: Literal[1, -1] = Field(default=1, description="1 loved/starred, -1 hated")
    since: float | None = Field(default=None, gt=0, lt=32503680000)


class FavouritesRequest(_Request):
    """``POST /users/{user}/favourites``."""

    source: str = Field(min_length=1, max_length=64)
    items: list[FavouriteItem] = Field(max_length=MAX_FAVOURITES)
    complete: bool = Field(default=True, description="the source's whole list: others go")


class FavouritesResult(_Response):
    changed: int
    removed: int
    matched: int
    unmatched: int


class StoredListen(_Response):
    id: int
    ts: float
    source: str
    outcome: str
    seconds: float | None = None
    estimated: bool = Field(default=False, description="the time is a guess (a play count)")
    recording_id: int | None = None
    match: str | None = Field(default=None, description="the rule that matched it")
    track: Track | None = Field(default=None, description="the item answering for it now")
    mb_recording: str | None = None
    isrc: str | None = None
    provider_id: str | None = None
    artist: str | None = None
    title: str | None = None
    album: str | None = None
    duration: float | None = None


class ListenPage(_Response):
    """``GET /users/{user}/listens``: newest first."""

    items: list[StoredListen]
    total: int
    offset: int
    limit: int
    next_offset: int | None = None


class UserSummary(_Response):
    user: str
    listens: int
    matched: int
    unmatched: int
    skips: int
    recordings: int
    favourites: int
    first: float | None = None
    last: float | None = None
    sources: dict[str, int] = Field(default_factory=dict)


class UserList(_Response):
    items: list[UserSummary]


class UserExport(_Response):
    """``GET /users/{user}/export``: everything the agent stores about one user (tokens left
    out)."""

    user: str
    exported: float
    listens: list[dict[str, object]]
    favourites: list[dict[str, object]]
    play_counters: list[dict[str, object]]
    sources: list[dict[str, object]]
    taste_profiles: list[dict[str, object]]


class UserDeleted(_Response):
    """``DELETE /users/{user}``: rows removed per table, in one transaction."""

    user: str
    deleted: dict[str, int]


# -- taste (docs/taste.md) ------------------------------------------------------------------------


class TasteCentre(_Response):
    share: float = Field(description="of the side's evidence weight")
    recordings: int
    top: list[Track] = Field(default_factory=list, description="its heaviest recordings")


class TasteProfile(_Response):
    """``GET /users/{user}/taste``."""

    user: str
    model: str
    computed: float
    reference_time: float = Field(description="decay is counted back from here")
    half_life_days: float
    listens: int
    recordings: int = Field(description="recordings with evidence and a vector")
    liked: int
    disliked: int
    k: int = Field(description="taste centres")
    silhouettes: dict[str, float] = Field(default_factory=dict, description="k → silhouette")
    centres: list[TasteCentre]
    negatives: list[TasteCentre] = Field(default_factory=list, description="what is skipped")


class RecommendRequest(_Request):
    """``POST /users/{user}/recommendations``."""

    mode: Literal["for_you", "rediscover", "discovery"] = "for_you"
    limit: int = Field(default=25, ge=1, le=MAX_LIMIT)
    model: str | None = Field(default=None, max_length=200)
    recent_days: float = Field(
        default=30.0, ge=0, le=36500, description="for_you: leave out what was played this recently"
    )
    since_days: float = Field(
        default=90.0, ge=0, le=36500, description="rediscover: not played for this long"
    )
    max_per_artist: int = Field(default=3, ge=0, le=MAX_LIMIT, description="0: no cap")
    filters: Filters | None = None


class Recommendation(Hit):
    reason: str = Field(description='why: "because you played …", or the play history')
    because: Track | None = Field(default=None, description="the liked item it is nearest to")
    centre: int | None = Field(default=None, description="the taste centre it answers")


class Recommendations(_Response):
    user: str
    mode: str
    model: str
    items: list[Recommendation]


class TrendWeek(_Response):
    week: str = Field(description="ISO date of the week's Monday (UTC)")
    listens: int
    skips: int
    moods: dict[str, float | None]
    axes: dict[str, float | None]
    diversity: float | None = None
    map: list[float | None] | None = Field(default=None, description="taste position (x, y)")


class ChangePoint(_Response):
    week: str
    index: int
    through: str
    moved: list[dict[str, object]]


class SeriesMomentum(_Response):
    ema: float | None = None
    momentum: float | None = None


class Trends(_Response):
    """``GET /users/{user}/trends``."""

    user: str
    model: str
    scores_model: str
    weeks: list[TrendWeek]
    labels: dict[str, list[float | None]]
    momentum: dict[str, SeriesMomentum]
    change_points: list[ChangePoint]
    method: dict[str, object]


# -- streaming ingest (docs/ingest.md) ------------------------------------------------------------


class PcmFormat(_Request):
    """Raw PCM, interleaved, little-endian."""

    encoding: Literal["s16le", "s24le", "s32le", "f32le"] = "s16le"
    sample_rate: int = Field(ge=8000, le=384000)
    channels: int = Field(ge=1, le=8)


class StreamIdentity(_Request):
    """What is being streamed: the provider's item, and whatever ids it has."""

    provider: str | None = Field(default=None, max_length=64, description="e.g. spotify, tidal")
    provider_id: str | None = Field(default=None, max_length=1000, description="item id or URI")
    mbid: str | None = Field(default=None, max_length=64)
    isrc: str | None = Field(default=None, max_length=32)
    artist: str | None = Field(default=None, max_length=1000)
    title: str | None = Field(default=None, max_length=1000)
    album: str | None = Field(default=None, max_length=1000)
    duration: float | None = Field(default=None, gt=0, le=86400)


class IngestStart(_Request):
    """``POST /ingest``: open a session."""

    identity: StreamIdentity = Field(default_factory=StreamIdentity)
    format: PcmFormat


class IngestSession(_Response):
    id: str
    state: Literal["open", "ending", "done", "aborted"]
    received_bytes: int
    frames: int
    seconds: float
    next_seq: int
    limits: dict[str, int | float]


class IngestResult(_Response):
    """``POST /ingest/{id}/end``: what was stored."""

    session: str
    stream: Track
    recording_id: int
    analysed: bool = Field(description="false: the audio matched a recording already analysed")
    matched: bool = Field(description="the PCM's fingerprint matched a stored recording")
    seconds: float
    analysis: AnalyzeResponse
