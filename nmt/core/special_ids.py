"""The four ids every vocabulary reserves, the same in every SentencePiece model this package
trains (``nmt.data.vocab``): what the model, the loss and the search need to know of the
vocabulary, and nothing more."""

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
