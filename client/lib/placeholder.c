int clue__placeholder;
