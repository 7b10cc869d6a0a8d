mod generate;
mod textmark;
