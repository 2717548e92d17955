drop table sql_layer_files;
