"""What a trained model makes of a text.

explain.py  surprisal and top guesses per character, and each cell's gates traced from its equations
units.py    hidden units (and an LSTM's cell state) that track simple features of the text
"""
