"""``llamasup eval``: accuracy of targets on a question suite, compared pairwise with a
stated confidence (see ``runner``)."""
