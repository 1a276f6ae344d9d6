"""Knowledge distillation between embedding models (papers 000, 001, 004).

- :mod:`~tfembed.distill.teachers`: where targets come from (a live model, a cache of its
  embeddings, one teacher per domain);
- :mod:`~tfembed.distill.terms`: the loss terms of a step (label, teacher embedding, heads,
  hint, attention, logits, per-domain);
- :class:`Distiller`: a student taught by one teacher (001's absolute/relative teacher, hint and
  attention transfer; 004's DarkRank with its heads and Hinton KD);
- ``UniversalDistiller``: one student taught by one specialist per domain (000's SND/RKD; it
  lives with paper 000's method in :mod:`tfembed.universal`, and is importable from here too);
- :class:`TeacherCache`: teachers' embeddings computed once and read by example id;
- :mod:`~tfembed.distill.config`: the ``teacher``, ``distill`` and ``teacher_cache`` blocks and
  the method entries (:class:`~tfembed.distill.config.DistillMethod`).
"""

from tfembed.distill import config  # noqa: F401  (its config block and method entries)
from tfembed.distill.cache import TeacherCache
from tfembed.distill.distiller import FC_LAYER, Distiller
from tfembed.distill.teachers import (
    CachedTeacher,
    DomainTeachers,
    LiveTeacher,
    Teacher,
    as_teacher,
)
from tfembed.distill.terms import (
    AttentionTerm,
    DomainTerm,
    HeadTerm,
    HintTerm,
    LabelTerm,
    LogitsTerm,
    StepOutputs,
    TeacherTerm,
    Term,
)


def __getattr__(name):
    # Paper 000's trainer lives in tfembed.universal (it imports this package: a lazy alias).
    if name == "UniversalDistiller":
        from tfembed.universal.distiller import UniversalDistiller  # noqa: PLC0415

        return UniversalDistiller
    raise AttributeError(f"module 'tfembed.distill' has no attribute {name!r}")
