"""The label vocabulary shared by the agent and every host: which labels are moods, which are
genres, and which lean energetic or calm.

The agent calls every label a "mood" (``GET /moods``), but hosts read better when "rock" is a genre
and "happy" a mood: the standard MOOD tag is filled from moods only, Music Assistant shows one row
per strong mood, the Navidrome catalogue names its tags ``nom_mood_…``/``nom_genre_…``, and CLAP's
zero-shot moods ask for moods. One vocabulary, here, so they all agree. The sets cover the built-in
musicnn MSD/MTT labels, the Essentia heads' positive classes and CLAP's zero-shot moods; a label in
none of them is a plain tag (decades, instruments, voices). Host names derive from these sets, so
moving a label between them renames a tag: they only ever grow.
"""

from __future__ import annotations

MOODS = frozenset(
    {
        "happy",
        "sad",
        "chill",
        "chillout",
        "mellow",
        "beautiful",
        "sexy",
        "party",
        "catchy",
        "easy_listening",
        "aggressive",
        "relaxed",
        "relaxing",
        "romantic",
        "dark",
        "energetic",
        "calm",
        "melancholic",
        "uplifting",
        "dreamy",
        "epic",
        "emotional",
        "fun",
        "groovy",
        "hopeful",
        "peaceful",
        "upbeat",
        "sentimental",
        "soft",
        "danceable",
        "quiet",
        "loud",
        "fast",
        "slow",
        "angry",
        "tense",
    }
)

GENRES = frozenset(
    {
        "rock",
        "pop",
        "alternative",
        "indie",
        "electronic",
        "dance",
        "alternative_rock",
        "jazz",
        "metal",
        "classic_rock",
        "soul",
        "indie_rock",
        "electronica",
        "folk",
        "punk",
        "blues",
        "hard_rock",
        "ambient",
        "experimental",
        "hip-hop",
        "hip_hop",
        "country",
        "funk",
        "electro",
        "heavy_metal",
        "progressive_rock",
        "rnb",
        "indie_pop",
        "house",
        "reggae",
        "classical",
        "techno",
        "trance",
        "disco",
        "latin",
        "rap",
        "drum_and_bass",
        "dubstep",
        "downtempo",
        "trip-hop",
        "grunge",
        "emo",
        "hardcore",
        "new_wave",
        "synthpop",
        "post-rock",
        "lounge",
        "orchestral",
        "soundtrack",
        "gospel",
        "ska",
        "swing",
        "opera",
        "world",
        "new_age",
        "industrial",
    }
)

# "Energetic vs calm": labels whose medium/high tier says the track pushes, or rests.
ENERGETIC = (
    "energetic",
    "aggressive",
    "party",
    "upbeat",
    "fast",
    "loud",
    "dance",
    "danceable",
    "metal",
    "heavy_metal",
    "hard_rock",
    "punk",
    "hardcore",
    "electro",
    "house",
    "techno",
    "trance",
    "drum_and_bass",
    "dubstep",
)
CALM = (
    "calm",
    "chill",
    "chillout",
    "relaxed",
    "relaxing",
    "mellow",
    "peaceful",
    "quiet",
    "slow",
    "soft",
    "easy_listening",
    "ambient",
    "downtempo",
    "lounge",
    "new_age",
)
# "Focus": no singing (when a model says so) and something unobtrusive.
FOCUS_VOICELESS = ("instrumental",)
FOCUS_CALM = CALM + ("classical", "orchestral", "soundtrack", "post-rock", "beautiful")
PARTY = (
    "party",
    "dance",
    "danceable",
    "catchy",
    "happy",
    "upbeat",
    "house",
    "disco",
    "electro",
    "funk",
)


# What CLAP's text tower is asked by default for zero-shot moods ("This is a <mood> song."): the
# moods that read naturally in that prompt.
CLAP_MOODS = (
    "happy",
    "sad",
    "aggressive",
    "relaxed",
    "energetic",
    "calm",
    "romantic",
    "dark",
    "uplifting",
    "melancholic",
    "party",
    "dreamy",
    "epic",
    "peaceful",
    "tense",
)


def is_mood(label: str) -> bool:
    """Whether a label (slug or plain words) names a mood rather than a genre or a tag."""
    return label.strip().lower().replace(" ", "_") in MOODS


def category(label: str) -> str:
    """``mood`` | ``genre`` | ``tag`` (everything else: decades, instruments, voices)."""
    if label in MOODS:
        return "mood"
    if label in GENRES:
        return "genre"
    return "tag"


def title(label: str) -> str:
    """A label as people write it in a playlist name."""
    special = {
        "rnb": "R&B",
        "hip-hop": "Hip-Hop",
        "hip_hop": "Hip-Hop",
        "drum_and_bass": "Drum and Bass",
        "edm": "EDM",
        "easy_listening": "Easy Listening",
    }
    if label in special:
        return special[label]
    return " ".join(w.capitalize() for w in label.replace("_", " ").replace("-", " ").split())
