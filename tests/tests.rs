mod signing;
