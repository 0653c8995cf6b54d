"""OpenAI Whisper encoders as s3prl upstreams, registered through the ``s3prl.upstreams`` entry-point group.

``hub`` holds the factories (``whisper_encoder_local``, ``whisper_tiny_en``, ``whisper_base`` and their
``_random`` twins), ``upstream`` the model (transformers' ``WhisperEncoder`` with every layer's state, named),
``ctranslate2_format`` the reader of CTranslate2 model folders, ``models`` the named releases and how to fetch them.
"""
